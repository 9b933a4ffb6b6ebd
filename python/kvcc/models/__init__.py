"""Models for kvcc's Python tests and examples: :mod:`kvcc.models.llama2c` converts the shipped
llama2.c checkpoint to a Hugging Face ``LlamaForCausalLM`` (needs torch and transformers)."""
