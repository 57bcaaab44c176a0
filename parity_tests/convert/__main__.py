import sys

from parity_tests.convert.cli import main

sys.exit(main())
