"""What each instruction does to a stage: config-only instructions (config.py), COPY/ADD and
WORKDIR (files.py, copy.py), RUN (run.py), and USER resolution (users.py)."""
