"""dynascope: measure why fine-tuning and looped inference of Transformers behave as they do."""

__version__ = "0.1.0"
