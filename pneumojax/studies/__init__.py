"""What spans many runs: sweep.py (`pneumojax sweep`: a grid of runs), tables.py (`pneumojax table`: their results,
mean and sd over seeds) and reproduction.py (`pneumojax reproduce`: experiments/REPRODUCTION.md)."""
