"""What every room uses and nothing of the search itself: the strict schema base, the training
device, cheap checks, limits for untrusted work, Ctrl-C, progress, number formatting, hashing,
threads and where a study's files live. Loads without torch (``device`` and ``threads`` import
it inside functions).
"""
