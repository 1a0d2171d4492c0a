"""`python predict.py ...` = `hybridlearn-predict ...`: see hybridlearn/digits/cli.py."""

from hybridlearn.digits.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
