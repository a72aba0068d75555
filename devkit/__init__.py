"""Development helpers shared by tests/ and bench/: neither of those imports the other,
both import this. Never imported by the product (evaluator/, leaderboard/).

- deployment: a real deployment in subprocesses (web server, Celery workers, database),
  driven over HTTP; zip_folder, the upload a user would send.
- fakes: synthetic benchmarks with stored results (Django; no TensorFlow).
- mini: the tiny MNIST subset, the tiny CNN and the `mini` benchmark's recipe.
"""
