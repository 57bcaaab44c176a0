import sys

from parity_tests.speed.cli import main

sys.exit(main())
