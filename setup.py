from setuptools import find_packages, setup

setup(
    name="fastmtl",
    version="0.2.0.dev0",
    description=(
        "Fast multi-task dense scene understanding: fused Triton kernels for "
        "semantic, instance and depth losses with learned uncertainty weighting"
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["fastmtl", "fastmtl.*"]) + ["fastmtl.kernels"],
    package_dir={"fastmtl.kernels": "kernels"},
    install_requires=[
        "torch>=2.6",
        "numpy>=1.24",
        "triton>=3.2; platform_system == 'Linux'",
        "tqdm>=4.60",
        "pillow>=9",
        "matplotlib>=3.6",
        "cityscapesscripts>=2.2",
    ],
    extras_require={
        "optics": ["scikit-learn>=1.2"],
        "bench": ["pytest-benchmark>=4", "liger-kernel>=0.5"],
        "test": ["pytest>=7", "pytest-benchmark>=4", "pytest-xdist>=3", "scikit-learn>=1.2"],
    },
    entry_points={"console_scripts": ["fastmtl=fastmtl.commands.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
