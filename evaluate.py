#!/usr/bin/env python
"""A BLEU table per skip variant: ``python evaluate.py RUN [RUN ...]``; ``--help`` lists every flag."""

import sys

from nmt.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
