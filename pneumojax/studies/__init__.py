"""What spans many runs: sweep.py (`pneumojax sweep`: a grid of runs), launchers.py (its runs N at once on this
host, or as SLURM jobs), tables.py (`pneumojax table`: their results, mean and sd over seeds) and reproduction.py
(`pneumojax reproduce`: experiments/REPRODUCTION.md)."""
