"""`python generate.py ...` = `hybridlearn-generate ...`: see hybridlearn/gan/generate.py."""

from hybridlearn.gan.generate import main

if __name__ == "__main__":
    raise SystemExit(main())
