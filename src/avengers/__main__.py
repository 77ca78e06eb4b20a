import sys

from avengers.cli import main

sys.exit(main())
