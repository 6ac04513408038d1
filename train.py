#!/usr/bin/env python
"""Train a Transformer translation model: ``python train.py --help`` lists every flag."""

import sys

from nmt.train import main

if __name__ == "__main__":
    sys.exit(main())
