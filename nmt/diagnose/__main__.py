import sys

from nmt.diagnose.cli import main

sys.exit(main())
