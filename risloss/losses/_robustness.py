"""The RIS robustness objective: inconsistency of a model's outputs under perturbation."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, Literal, get_args

import attrs
import torch
from torch import nn

from risloss._fields import default_of, setting
from risloss._stateless import stateless_call
from risloss._util import model_device
from risloss._validators import Rule, int_in, non_negative, one_of, positive
from risloss.functional import (
    DIVERGENCE_KINDS,
    FEATURE_KINDS,
    DivergenceKind,
    FeatureKind,
    feature_inconsistency,
    prediction_divergence,
)
from risloss.functional._checks import check_finite
from risloss.hooks import FeatureKind as CaptureKind
from risloss.hooks import LayerSpec, capture_features, resolve_layers
from risloss.perturb import (
    GaussianWeightNoise,
    InputPerturbation,
    WeightPerturbation,
    default_input_perturbation,
)

__all__ = [
    "MODES",
    "Mode",
    "RobustnessConfig",
    "RobustnessLoss",
    "RobustnessParts",
    "noise_threshold",
]

Mode = Literal["random", "joint", "input", "weight"]
"""How each draw of :class:`RobustnessLoss` combines the input and weight perturbations."""
MODES: tuple[str, ...] = get_args(Mode)
"""The allowed values of ``mode``."""


class _Default:
    """Marker for "use the library's default perturbation"."""

    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT: Any = _Default()


def default_weight_perturbation() -> GaussianWeightNoise:
    """The weight perturbation of :class:`RobustnessLoss` when none is given: relative Gaussian
    noise with ``eps=0.05`` on the conv and linear weights.

    The one definition of the default weight noise: ``RISConfig``'s ``weight_noise_eps`` and
    ``weight_noise_mode`` read their defaults from it.

    Example:
        >>> from risloss.losses._robustness import default_weight_perturbation
        >>> default_weight_perturbation().eps, default_weight_perturbation().mode
        (0.05, 'relative')
    """
    return GaussianWeightNoise(eps=0.05, mode="relative")


def _real(value: Any) -> Any:
    """``float(value)`` for a number; a ``bool``, a string or anything ``float`` rejects is
    passed on unchanged, for the field's validator to reject with its message."""
    if isinstance(value, bool | str):
        return value
    try:
        return float(value)
    except (TypeError, ValueError, RuntimeError):
        return value


def _number(default: float, rule: Rule, *, help: str) -> Any:
    """A real-valued setting: ``default``, converted by :func:`_real`, checked by ``rule``."""
    return setting(default, converter=_real, validator=rule, help=help)


@attrs.frozen
class RobustnessConfig:
    """Validated scalar configuration of :class:`RobustnessLoss` (see its arguments).

    The one declaration of the robustness settings: ``RobustnessLoss`` reads its keyword
    defaults from these fields and keeps the validated values as ``loss.config``;
    :class:`~risloss.RISConfig` re-declares ``mode``, ``num_draws``, ``feature_distance``,
    ``prediction_distance`` and ``threshold`` from them. Each field carries its help text
    (``attrs.fields(RobustnessConfig).mode.metadata["help"]``).

    Attributes:
        mode: ``"random"``, ``"joint"``, ``"input"`` or ``"weight"``.
        num_draws: perturbed passes per call, 1..64.
        feature_distance: ``"cosine"``, ``"mse"``, ``"l1"`` or ``"nmse"``.
        prediction_distance: ``"l1"`` (the paper's), ``"kl"``, ``"skl"`` or ``"js"``.
        feature_weight: ``lambda_f >= 0``.
        prediction_weight: ``lambda_p >= 0``.
        threshold: ``epsilon_t >= 0``.
        temperature: softmax temperature ``T > 0``.
        detach_clean: stop gradients at the clean pass.

    Raises:
        ValueError: a value out of range (the message names the field and the allowed values),
            or both weights 0.

    Example:
        >>> from risloss.losses import RobustnessConfig
        >>> RobustnessConfig(num_draws=2).num_draws
        2
        >>> RobustnessConfig(mode="both")
        Traceback (most recent call last):
        ...
        ValueError: mode must be one of ('random', 'joint', 'input', 'weight'), got 'both'
    """

    mode: Mode = setting(
        "random", validator=one_of(MODES), help="how input and weight perturbations combine"
    )
    num_draws: int = setting(1, validator=int_in(1, 64), help="perturbation draws per step")
    feature_distance: FeatureKind = setting(
        "cosine",
        validator=one_of(FEATURE_KINDS),
        help="distance between clean and perturbed features",
    )
    prediction_distance: DivergenceKind = setting(
        "l1", validator=one_of(DIVERGENCE_KINDS), help="divergence between predictions"
    )
    feature_weight: float = _number(
        1.0, non_negative, help="lambda_f, weight of the feature inconsistency"
    )
    prediction_weight: float = _number(
        1.0, non_negative, help="lambda_p, weight of the prediction divergence"
    )
    threshold: float = _number(0.0, non_negative, help="inconsistency below this costs nothing")
    temperature: float = _number(
        1.0, positive, help="softmax temperature of the prediction divergence"
    )
    detach_clean: bool = setting(
        False,
        converter=bool,
        help="stop gradients at the clean pass (it becomes a target)",
    )

    def __attrs_post_init__(self) -> None:
        if self.feature_weight == 0 and self.prediction_weight == 0:
            raise ValueError(
                "feature_weight and prediction_weight cannot both be 0: the loss would be 0"
            )


class RobustnessLoss(nn.Module):
    r"""Penalize how much a model's features and predictions move under perturbation (RIS).

    For a batch ``x`` the loss compares a clean forward pass of ``model`` with ``num_draws``
    perturbed passes. Each draw perturbs the input (``x -> T(x)``), the weights
    (``W -> W + delta``, applied statelessly with :func:`torch.func.functional_call`, so the
    model is never modified or copied), or both, according to ``mode``:

    .. math::

        L_{rob} = \frac{1}{N B} \sum_{n=1}^{N} \sum_{i=1}^{B}
            \max\bigl(0,\ \lambda_f D_f^{(n)}(x_i) + \lambda_p D_p^{(n)}(x_i) - \epsilon_t\bigr)

    with ``D_f`` the mean over ``feature_layers`` of the feature distance between clean and
    perturbed features and ``D_p`` the distance between ``softmax(logits / T)`` of the clean and
    perturbed passes.

    The model is evaluated as it is: in eval mode BatchNorm uses its running statistics; in train
    mode it uses batch statistics, and the running statistics are never updated (the perturbed
    and clean passes run on copies of the buffers). In eval mode the buffers are used as they
    are, so a module that writes its buffers in eval mode (the activation observers of a
    quantized model during calibration) must be frozen first (:func:`risloss.quant.freeze`).
    Gradients flow to ``x`` (and so to a generator that produced it), never into the model's
    parameters, even where they have ``requires_grad=True``.

    Cost: one teacher forward pass for the clean branch (none when ``clean_logits`` is given)
    and one per draw, each followed by its backward pass; the model is never deep-copied.

    Args:
        model: the classifier (the teacher). It is referenced, not copied or registered as a
            submodule, so ``RobustnessLoss(...).state_dict()`` holds no teacher weights.
        input_perturbation: an :class:`~risloss.perturb.InputPerturbation`;
            the default is :func:`~risloss.perturb.default_input_perturbation`; ``None`` disables
            input perturbation.
        weight_perturbation: a :class:`~risloss.perturb.WeightPerturbation` (for instance
            :class:`~risloss.perturb.GaussianWeightNoise` or
            :class:`~risloss.perturb.QuantizationWeightNoise`); the default is relative
            Gaussian noise with ``eps=0.05`` on conv and linear weights
            (``default_weight_perturbation()``); ``None`` disables weight perturbation.
        mode: how each draw combines the perturbations: ``"random"`` (input or weights, chosen
            per draw with probability 1/2), ``"joint"`` (both), ``"input"`` or ``"weight"``.
        num_draws: perturbed passes per call (``N``), 1..64.
        feature_layers: layers whose features are compared: a name, a list of names or glob
            patterns, a ``{name: "input" | "output"}`` mapping, or ``None`` for the penultimate
            feature (the input of the model's last ``nn.Linear``). Resolved names are in
            :attr:`feature_layers`.
        feature_distance: ``"cosine"``, ``"mse"``, ``"l1"`` or ``"nmse"``
            (see :func:`~risloss.functional.feature_inconsistency`).
        prediction_distance: ``"l1"``, ``"kl"``, ``"skl"`` or ``"js"``
            (see :func:`~risloss.functional.prediction_divergence`).
        feature_weight: ``lambda_f`` >= 0; 0 skips feature capture altogether.
        prediction_weight: ``lambda_p`` >= 0 (not both 0).
        threshold: ``epsilon_t`` >= 0; see :func:`noise_threshold` to calibrate it on noise.
        temperature: softmax temperature ``T`` of the prediction term.
        detach_clean: stop gradients at the clean branch (the clean pass becomes a target).
        generator: the :class:`torch.Generator` every random draw comes from; ``None`` uses
            torch's global generator.

    Raises:
        ValueError: an unknown ``mode`` or distance, ``num_draws`` outside 1..64, a negative or
            non-finite weight or threshold, both weights 0, a non-positive or non-finite
            temperature, a ``mode`` that needs a perturbation that is ``None``, both
            perturbations ``None``, or feature layers that match nothing in ``model``.
        TypeError: ``model`` or ``input_perturbation`` is not an ``nn.Module``.

    Example:
        >>> import torch
        >>> from risloss import RobustnessLoss
        >>> from risloss.models import resnet8
        >>> teacher = resnet8(in_channels=1).eval().requires_grad_(False)
        >>> rob = RobustnessLoss(teacher, generator=torch.Generator().manual_seed(0))
        >>> rob.feature_layers
        {'fc': 'input'}
        >>> x = torch.randn(4, 1, 28, 28, requires_grad=True)
        >>> loss = rob(x)
        >>> loss.backward()
        >>> bool(loss >= 0) and x.grad is not None
        True
    """

    feature_layers: dict[str, CaptureKind]

    def __init__(
        self,
        model: nn.Module,
        *,
        input_perturbation: InputPerturbation | None = DEFAULT,
        weight_perturbation: WeightPerturbation | None = DEFAULT,
        mode: Mode = default_of(RobustnessConfig, "mode"),
        num_draws: int = default_of(RobustnessConfig, "num_draws"),
        feature_layers: LayerSpec | None = None,
        feature_distance: FeatureKind = default_of(RobustnessConfig, "feature_distance"),
        prediction_distance: DivergenceKind = default_of(RobustnessConfig, "prediction_distance"),
        feature_weight: float = default_of(RobustnessConfig, "feature_weight"),
        prediction_weight: float = default_of(RobustnessConfig, "prediction_weight"),
        threshold: float = default_of(RobustnessConfig, "threshold"),
        temperature: float = default_of(RobustnessConfig, "temperature"),
        detach_clean: bool = default_of(RobustnessConfig, "detach_clean"),
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        self.config = RobustnessConfig(
            mode=mode,
            num_draws=num_draws,
            feature_distance=feature_distance,
            prediction_distance=prediction_distance,
            feature_weight=feature_weight,
            prediction_weight=prediction_weight,
            threshold=threshold,
            temperature=temperature,
            detach_clean=detach_clean,
        )
        if input_perturbation is DEFAULT:
            input_perturbation = default_input_perturbation()
        if weight_perturbation is DEFAULT:
            weight_perturbation = default_weight_perturbation()
        if input_perturbation is not None and not isinstance(input_perturbation, nn.Module):
            raise TypeError("input_perturbation must be an InputPerturbation module or None")
        if weight_perturbation is not None and not isinstance(
            weight_perturbation, WeightPerturbation
        ):
            raise TypeError("weight_perturbation must be a WeightPerturbation or None")
        if mode in ("joint", "input") and input_perturbation is None:
            raise ValueError(f"mode={mode!r} needs an input_perturbation, got None")
        if mode in ("joint", "weight") and weight_perturbation is None:
            raise ValueError(f"mode={mode!r} needs a weight_perturbation, got None")
        if input_perturbation is None and weight_perturbation is None:
            raise ValueError(
                "input_perturbation and weight_perturbation cannot both be None: "
                "the loss would have nothing to perturb"
            )
        # Referenced, not registered: the teacher's weights stay out of this module's state.
        self.__dict__["model"] = model
        self.input_perturbation = input_perturbation
        self.weight_perturbation = weight_perturbation
        # Names of the perturbed parameters, cached with the state they were computed from.
        self._targets: tuple[str, ...] = ()
        self._targets_key: tuple[Any, ...] | None = None
        if weight_perturbation is not None:
            self._targets = weight_perturbation.targets(model)  # fails now if nothing selected
        self.generator = generator
        if self.config.feature_weight > 0:
            spec = "penultimate" if feature_layers is None else feature_layers
            self.feature_layers = dict(resolve_layers(model, spec))
        else:
            self.feature_layers = {}

    model: nn.Module

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"mode={c.mode!r}, num_draws={c.num_draws}, feature_layers={self.feature_layers}, "
            f"feature_distance={c.feature_distance!r}, prediction_distance="
            f"{c.prediction_distance!r}, feature_weight={c.feature_weight}, prediction_weight="
            f"{c.prediction_weight}, threshold={c.threshold}, temperature={c.temperature}, "
            f"detach_clean={c.detach_clean}"
        )

    def _state(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
        """Detached parameters; in train mode copies of the buffers (BN cannot update them).

        In eval mode the model's own buffers are used (``None``: nothing is substituted).
        Also refreshes the cached names of the perturbed parameters when the model's
        parameters (names and objects) or the weight perturbation changed.
        """
        named = list(self.model.named_parameters())
        if self.weight_perturbation is not None:
            key = (id(self.weight_perturbation), *((n, id(p)) for n, p in named))
            if key != self._targets_key:
                self._targets = self.weight_perturbation.targets(self.model)
                self._targets_key = key
        params = {n: p.detach() for n, p in named}
        if not self.model.training:
            return params, None
        return params, {n: b.clone() for n, b in self.model.named_buffers()}

    def _forward_features(
        self,
        x: torch.Tensor,
        params: dict[str, torch.Tensor],
        buffers: dict[str, torch.Tensor] | None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if not self.feature_layers:
            return stateless_call(self.model, params, (x,), buffers=buffers), {}
        with capture_features(self.model, self.feature_layers) as feats:
            logits = stateless_call(self.model, params, (x,), buffers=buffers)
            captured = {name: feats[name] for name in self.feature_layers}
        return logits, captured

    def _draw_kinds(self) -> tuple[bool, bool]:
        mode = self.config.mode
        if mode == "joint":
            return True, True
        if mode == "input":
            return True, False
        if mode == "weight":
            return False, True
        if self.input_perturbation is None:
            return False, True
        if self.weight_perturbation is None:
            return True, False
        device = self.generator.device if self.generator is not None else None
        use_input = bool(torch.rand((), generator=self.generator, device=device) < 0.5)
        return use_input, not use_input

    def forward(
        self,
        x: torch.Tensor,
        *,
        clean_logits: torch.Tensor | None = None,
        clean_features: Mapping[str, torch.Tensor] | None = None,
        return_parts: bool = False,
    ) -> torch.Tensor:
        """Compute the robustness loss of a batch (a scalar; :meth:`parts` gives the parts).

        Args:
            x: input images ``(B, C, H, W)``.
            clean_logits: logits of ``model(x)`` the caller already computed; when given, the
                clean pass is not repeated (one teacher forward pass per draw remains).
            clean_features: the features of that same pass, as captured by
                ``with capture_features(model, rob.feature_layers) as feats: model(x)``;
                required with ``clean_logits`` when ``feature_weight > 0``.
            return_parts: deprecated; call :meth:`parts` instead (with ``True`` this returns
                the dict of earlier versions and warns).

        Returns:
            The scalar loss.

        Raises:
            NonFiniteInputError: ``x`` or ``clean_logits`` holds ``NaN`` or ``Inf`` (a
                :class:`ValueError`).
            ValueError: ``clean_logits`` without ``clean_features`` while
                ``feature_weight > 0``, ``clean_features`` missing a layer, or batch sizes
                that disagree.
        """
        parts = self.parts(x, clean_logits=clean_logits, clean_features=clean_features)
        if return_parts:
            warnings.warn(
                "RobustnessLoss(..., return_parts=True) is deprecated; call loss.parts(...), "
                "which returns a RobustnessParts record",
                DeprecationWarning,
                stacklevel=4,  # the caller of the module, past nn.Module's call machinery
            )
            return parts.as_dict()  # type: ignore[return-value]
        return parts.loss

    def parts(
        self,
        x: torch.Tensor,
        *,
        clean_logits: torch.Tensor | None = None,
        clean_features: Mapping[str, torch.Tensor] | None = None,
    ) -> RobustnessParts:
        """Compute the loss and its parts; the arguments are those of :meth:`forward`.

        Returns:
            A :class:`RobustnessParts` record: ``loss`` (scalar, with its graph), ``feature``
            and ``prediction`` (mean ``D_f`` and ``D_p`` over draws and samples, detached),
            ``inconsistency`` (mean ``lambda_f D_f + lambda_p D_p`` before the threshold,
            detached) and ``per_sample`` (the hinge values ``(B,)`` averaged over draws).

        Raises:
            NonFiniteInputError, ValueError: as :meth:`forward`.

        Example:
            >>> import torch
            >>> from risloss.losses import RobustnessLoss
            >>> from risloss.models import resnet8
            >>> rob = RobustnessLoss(resnet8(in_channels=1).eval().requires_grad_(False))
            >>> parts = rob.parts(torch.randn(4, 1, 28, 28))
            >>> parts.per_sample.shape, bool(parts.loss >= 0)
            (torch.Size([4]), True)
        """
        check_finite(x, "x")
        c = self.config
        params, buffers = self._state()
        if clean_logits is None:
            clean_logits, features = self._forward_features(x, params, buffers)
        else:
            if clean_logits.dim() == 0 or clean_logits.shape[0] != x.shape[0]:
                raise ValueError(
                    f"clean_logits must have shape (B, C) with the batch size of x "
                    f"({x.shape[0]}), got {tuple(clean_logits.shape)}"
                )
            check_finite(clean_logits, "clean_logits")
            features = {}
            if self.feature_layers:
                if clean_features is None:
                    raise ValueError(
                        "clean_features is required with clean_logits when feature_weight > 0; "
                        "capture them with capture_features(model, rob.feature_layers)"
                    )
                missing = [n for n in self.feature_layers if n not in clean_features]
                if missing:
                    expected = list(self.feature_layers)
                    raise ValueError(f"clean_features lacks layers {missing}; expected {expected}")
                features = {n: clean_features[n] for n in self.feature_layers}
        if c.detach_clean:
            clean_logits = clean_logits.detach()
            features = {n: f.detach() for n, f in features.items()}

        total = x.new_zeros(x.shape[0])
        f_sum = x.new_zeros(())
        p_sum = x.new_zeros(())
        raw_sum = x.new_zeros(())
        for _ in range(c.num_draws):
            use_input, use_weight = self._draw_kinds()
            x_d = x
            if use_input:
                assert self.input_perturbation is not None
                x_d = self.input_perturbation(x, generator=self.generator)
            params_d = params
            if use_weight:
                assert self.weight_perturbation is not None
                # The targets' tensors, in target order: the draw equals sample(model).
                targets = {n: params[n] for n in self._targets}
                deltas = self.weight_perturbation.sample(targets, generator=self.generator)
                params_d = self.weight_perturbation.apply(params, deltas)
            logits_d, features_d = self._forward_features(x_d, params_d, buffers)
            d_p = prediction_divergence(
                clean_logits,
                logits_d,
                kind=c.prediction_distance,
                temperature=c.temperature,
                reduction="none",
            )
            value = c.prediction_weight * d_p
            if features:
                d_f = torch.stack(
                    [
                        feature_inconsistency(
                            features[n], features_d[n], kind=c.feature_distance, reduction="none"
                        )
                        for n in features
                    ]
                ).mean(0)
                value = value + c.feature_weight * d_f
                f_sum = f_sum + d_f.detach().mean()
            p_sum = p_sum + d_p.detach().mean()
            raw_sum = raw_sum + value.detach().mean()
            total = total + torch.relu(value - c.threshold)
        per_sample = total / c.num_draws
        return RobustnessParts(
            loss=per_sample.mean(),
            feature=f_sum / c.num_draws,
            prediction=p_sum / c.num_draws,
            inconsistency=raw_sum / c.num_draws,
            per_sample=per_sample,
        )


@attrs.frozen
class RobustnessParts:
    """What one call of :meth:`RobustnessLoss.parts` computed.

    Attributes:
        loss: the scalar loss, with its graph.
        feature: mean feature inconsistency ``D_f`` over draws and samples (detached; 0 when
            features are not compared).
        prediction: mean prediction divergence ``D_p`` (detached).
        inconsistency: mean ``lambda_f D_f + lambda_p D_p`` before the threshold (detached):
            what :func:`noise_threshold` averages.
        per_sample: the hinge values ``(B,)`` averaged over draws, with their graph.
    """

    loss: torch.Tensor
    feature: torch.Tensor
    prediction: torch.Tensor
    inconsistency: torch.Tensor
    per_sample: torch.Tensor

    def as_dict(self) -> dict[str, torch.Tensor]:
        """The parts by name (the dict that ``return_parts=True`` returned)."""
        return {
            "loss": self.loss,
            "feature": self.feature,
            "prediction": self.prediction,
            "per_sample": self.per_sample,
        }


@torch.no_grad()
def noise_threshold(
    loss: RobustnessLoss,
    input_shape: tuple[int, ...],
    *,
    multiple: float = 1.0,
    num_batches: int = 4,
    device: str | torch.device | None = None,
) -> float:
    """Calibrate a threshold as ``multiple`` times the inconsistency of ``N(0, 1)`` images.

    The paper sets its threshold with reference to pure-noise inputs. This runs ``loss`` (with
    its own perturbations and generator, threshold ignored) on ``num_batches`` batches of
    standard normal images and returns ``multiple`` times the mean of
    ``lambda_f * D_f + lambda_p * D_p`` (:attr:`RobustnessParts.inconsistency`; ``loss`` is
    not changed). Build the loss to use with
    ``RobustnessLoss(..., threshold=noise_threshold(...))``.

    Args:
        loss: a configured robustness loss.
        input_shape: ``(B, C, H, W)`` of the noise batches.
        multiple: factor applied to the noise inconsistency (>= 0).
        num_batches: noise batches averaged.
        device: where to draw the noise (default: the model's device).

    Returns:
        The threshold, a float ``>= 0``.

    Raises:
        ValueError: ``multiple < 0``, ``num_batches < 1`` or a shape that is not 4-D.

    Example:
        >>> import torch
        >>> from risloss.losses import RobustnessLoss, noise_threshold
        >>> from risloss.models import resnet8
        >>> teacher = resnet8(in_channels=1).eval().requires_grad_(False)
        >>> probe = RobustnessLoss(teacher, generator=torch.Generator().manual_seed(0))
        >>> eps_t = noise_threshold(probe, (4, 1, 28, 28), multiple=0.5, num_batches=2)
        >>> rob = RobustnessLoss(teacher, threshold=eps_t)
        >>> eps_t >= 0 and rob.config.threshold == eps_t
        True
    """
    if not multiple >= 0:
        raise ValueError(f"multiple must be >= 0, got {multiple!r}")
    if num_batches < 1:
        raise ValueError(f"num_batches must be >= 1, got {num_batches}")
    if len(input_shape) != 4:
        raise ValueError(f"input_shape must be (B, C, H, W), got {input_shape}")
    if device is None:
        device = model_device(loss.model)
    noise_device = loss.generator.device if loss.generator is not None else device
    values = []
    for _ in range(num_batches):
        x = torch.randn(input_shape, generator=loss.generator, device=noise_device).to(device)
        values.append(float(loss.parts(x).inconsistency))
    return multiple * sum(values) / len(values)
