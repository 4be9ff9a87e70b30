"""Instruments for studying backpropagation: graph drawing, a backprop tracer,
gradient-flow logging and memory accounting. Anomaly mode is
``tinygrad_cnn.detect_anomaly``."""
from .flow import GradientFlow
from .graph import render, to_dot
from .memory import MemoryReport, memory_report
from .tracer import BackwardStep, BackwardTrace, saved_bytes, trace_backward

__all__ = ["to_dot", "render", "trace_backward", "BackwardTrace", "BackwardStep", "saved_bytes",
           "GradientFlow", "memory_report", "MemoryReport"]
