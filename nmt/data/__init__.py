"""Data: where parallel text comes from, how it is tokenized and how it is batched."""
