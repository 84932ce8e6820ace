"""What reads one trained run: load.py (`load_run`: its config, model and checkpoint), evaluate.py (`pneumojax
eval`), report.py (`pneumojax report`), predict.py (`pneumojax predict`), explain.py (`pneumojax explain`) and
ood.py (its out-of-distribution detector). pneumojax/api.py puts them behind one object."""
