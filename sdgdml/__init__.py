"""sdgdml: a DomainBed-style framework for single-domain generalized deep metric learning."""
__version__ = "0.1.0"
