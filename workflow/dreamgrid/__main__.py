import sys

from dreamgrid.cli import main

sys.exit(main())
