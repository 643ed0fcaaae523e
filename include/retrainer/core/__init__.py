"""Run configuration and parameters, the run window, typed results, the run layout, atomic writes, locks, errors."""
