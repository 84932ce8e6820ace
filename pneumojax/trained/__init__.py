"""What reads one trained run: load.py (`load_run`: its config, model and checkpoint), evaluate.py (`pneumojax
eval`), report.py (`pneumojax report`), predict.py (`pneumojax predict`) and explain.py (`pneumojax explain`)."""
