"""`python predict.py ...` = `hybridlearn-predict ...`: see hybridlearn/digits/predict.py."""

from hybridlearn.digits.predict import main

if __name__ == "__main__":
    raise SystemExit(main())
