"""medauc-bench: a benchmark harness for Deep AUC Maximization on small MedMNIST tasks."""

__version__ = "0.1.0"
