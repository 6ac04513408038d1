import sys

from nmt.report.cli import main

sys.exit(main())
