"""Evaluation, pure: arrays in, numbers and figures out (no workdir, no model code).

metrics.py (CLU collections and the classification metrics), threshold.py (the operating threshold, chosen on
validation outputs), bootstrap.py (patient-bootstrap intervals), plots.py (figures), ood.py (out-of-distribution
scores: Mahalanobis distances of features).
"""
