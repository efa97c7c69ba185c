"""The run directory and fault tolerance: its lock, settings and atomic writes;
checkpoints kept through preemption and kills; the outputs and curves.
"""
