"""Runnable recipes (`python -m recipes.mnist`) and, in `recipes/core`, the machinery
they share. Importing this package changes no process-wide state."""
