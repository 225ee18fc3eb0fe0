import sys

from risloss.cli import main

sys.exit(main())
