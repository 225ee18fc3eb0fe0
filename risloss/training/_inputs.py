"""What a run is given, resolved once: the teacher, its test data, its :class:`InputSpec`, the
number of classes; and the generator that both jobs build from them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
import torch
from torch import nn
from torch.utils.data import Dataset

from risloss.data import InputSpec, load_for_model
from risloss.objective import is_standardized
from risloss.training._config import TrainConfig
from risloss.training._models import describe_object, load_teacher
from risloss.training._sources import GeneratorSource, ImageSource

if TYPE_CHECKING:
    from risloss.training._run import Run

__all__ = ["Inputs", "check_data_argument", "generator_source", "input_range_hint"]


def check_data_argument(value: Any, name: str) -> None:
    """``TypeError`` unless ``value`` is ``None`` or a data set (a name goes in the config)."""
    if value is None:
        return
    if isinstance(value, str) or not (hasattr(value, "__getitem__") and hasattr(value, "__len__")):
        raise TypeError(
            f"{name} must be a torch Dataset of (image, label) pairs (a data set given by name "
            f"goes in TrainConfig.data), got {type(value).__name__}"
        )


@attrs.frozen(eq=False)
class Inputs:
    """The teacher (eval mode, gradients off, on the run's device), its checked test data,
    the record of its input, its number of classes and what was given as objects."""

    teacher: nn.Module
    metadata: dict[str, Any]
    test: Any
    spec: InputSpec
    num_classes: int
    objects: dict[str, str]

    @classmethod
    def resolve(
        cls,
        config: TrainConfig,
        device: torch.device,
        *,
        model: nn.Module | None = None,
        test_data: Dataset | None = None,
    ) -> Inputs:
        """Load and check the teacher and the test data (``config.model`` and
        ``config.data`` where no object is given); nothing is written.

        Raises:
            ValueError: a CUDA device without CUDA, or see :func:`~risloss.data.load_for_model`.
        """
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("device='cuda' was asked for but torch.cuda.is_available() is False")
        teacher, meta = load_teacher(config.model if model is None else model, config.weights)
        teacher = teacher.to(device)
        test, spec = load_for_model(
            teacher,
            config.data if test_data is None else test_data,
            image_size=config.image_size,
            normalize=config.normalize,
            input_range=config.input_range,
            metadata=meta,
            limit=config.eval_limit,
        )
        num_classes = int(
            meta.get("num_classes") or teacher(torch.zeros(1, *spec.shape, device=device)).shape[1]
        )
        objects = {
            name: describe_object(value)
            for name, value in (("model", model), ("test_data", test_data))
            if value is not None
        }
        return cls(teacher, meta, test, spec, num_classes, objects)


def generator_source(config: TrainConfig, inputs: Inputs, run: Run) -> GeneratorSource:
    """The generator, its optimizer and objective, as ``config`` describes them, drawing from
    the run's random streams; a note goes to the run's log when the teacher seems to expect
    images far from standardized ones (:func:`input_range_hint`)."""
    source = GeneratorSource(
        inputs.teacher,
        method=config.method,
        ris=config.ris,
        num_classes=inputs.num_classes,
        shape=inputs.spec.shape,
        batch_size=config.batch_size,
        lr=config.lr_generator,
        rng=run.data_rng,
        conditioning=config.generator_conditioning,
        output_lr_scale=config.generator_output_lr_scale,
        input_mean=config.input_mean,
        input_std=config.input_std,
        fit_input_statistics=config.fit_input_statistics,
        output_range=inputs.spec.input_range,
        output_bound=config.generator_output_bound,
        perturbation_rng=run.perturbation_rng,
        device=run.context.device,
        context=run.context,
        global_batch_statistics=config.global_batch_statistics,
        adversarial_weight=config.adversarial_weight,
    )
    hint = input_range_hint(source, config)
    if hint:
        run.say(hint)
    return source


def input_range_hint(source: ImageSource, config: TrainConfig) -> str | None:
    """A one-line note when the teacher's first BatchNorm layer expects images far from
    standardized ones (:func:`~risloss.objective.is_standardized`): a model that takes
    ``[0, 1]`` images and normalizes them itself.

    With ``fit_input_statistics="auto"`` (the default) the generator starts in that range and
    the note says so; with ``False`` it starts standardized and the note says how to start it
    there instead.

    Returns:
        The note, or ``None`` (statistics declared, close to standardized, or fitted on
        request).
    """
    if not isinstance(source, GeneratorSource) or config.fit_input_statistics is True:
        return None
    fitted = source.fitted_input_statistics
    if fitted is None or is_standardized(*fitted):
        return None
    scale, shift = fitted
    fmt = ", ".join
    found = (
        "note: the model's first BatchNorm layer expects inputs of about scale "
        f"[{fmt(f'{v:.2f}' for v in scale.tolist())}] and shift "
        f"[{fmt(f'{v:.2f}' for v in shift.tolist())}] per channel, not standardized ones"
    )
    if source.input_statistics_fitted:
        return (
            f"{found}: the generator starts there (--no-fit-input-statistics, "
            "fit_input_statistics=False, starts it standardized)"
        )
    return f"{found}; --fit-input-statistics (fit_input_statistics=True) starts the generator there"
