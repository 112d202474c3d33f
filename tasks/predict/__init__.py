"""`fmnist predict`: images, arrays or IDX files in (inputs), a published model's classes out (classify)."""
