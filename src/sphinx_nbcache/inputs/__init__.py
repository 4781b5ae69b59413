"""What a notebook's outputs depend on besides its code: files it reads (declared and
discovered), files it writes (artefacts), and what is installed where its kernel runs."""
