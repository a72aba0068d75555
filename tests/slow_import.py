"""A module that takes a while to import: stands in for TensorFlow in the spare tests."""

import time

time.sleep(1.5)
IMPORTED_AT = time.time()
