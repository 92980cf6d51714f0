from setuptools import find_packages, setup

setup(
    name="lxmert-s",
    version="0.1.0",
    description="A faithful, fast PyTorch reproduction of LXMERT-S (Liu, Feng, Wang, ACL 2021)",
    package_dir={"": "src"},
    packages=find_packages("src"),
    python_requires=">=3.9",
    # torch is deliberately not pinned here: install the build that fits your machine first
    # (README: CPU wheel `torch==2.13.0`, or a CUDA build on GPU machines).
    install_requires=[
        "torch>=2.1",
        "numpy",
        "transformers>=4.40",
        "tokenizers>=0.15",
        "tqdm",
        "h5py",
        "pandas",
        "pillow",       # images: feature extraction, attention pictures
        "matplotlib",   # training curves (tools.plot_metrics)
    ],
)
