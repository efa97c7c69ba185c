"""What a step computes beyond the plain loss: pruning's masks and distillation's teacher
term (`step.Objective` subclasses).
"""
