"""Scripts the tests run in subprocesses (e.g. with several simulated CPU devices)."""
