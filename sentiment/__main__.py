"""`python -m sentiment ...` is the `sentiment` command (also under torchrun / accelerate launch)."""

from sentiment.cli import main

main()
