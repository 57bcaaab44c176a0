import sys

from lightning_densenet.cli import main

sys.exit(main())
