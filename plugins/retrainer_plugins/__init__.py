"""Airflow operators and sensors for retrainer (the plugins folder is on Airflow's sys.path)."""
