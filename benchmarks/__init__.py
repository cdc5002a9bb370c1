"""jrmsprop's benchmark (``run.py``) and porting demo (``demo.py``); see README.md."""
