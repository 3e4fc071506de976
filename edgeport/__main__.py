import sys

from edgeport.cli import main

sys.exit(main())
