"""THE stage layer: common.py (the toolkit every stage uses) and one module per experiment family.

Configs list the modules whose stages they run in `config.stage_modules`; the runner imports
them (experiment.py names none).
"""
