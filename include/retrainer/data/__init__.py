"""The data engines' work: landing, the landed files a run needs, the raw gate's Great Expectations suites, the
feature store, drift, the spark-submit of the features job.
"""
