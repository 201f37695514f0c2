"""Install detkit: `pip install -e .[test]`."""
from setuptools import find_packages, setup

WEB = ["fastapi>=0.110", "uvicorn>=0.29", "python-multipart>=0.0.13"]
OPENVINO = ["openvino>=2025.0", "nncf>=2.14"]

setup(
    name="detkit",
    version="0.1.0",
    description="Faster R-CNN object detection toolkit: TensorFlow 2 + Keras 3 with a one-config CLI",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="BSD-3-Clause",
    python_requires=">=3.10",
    packages=find_packages(include=["detkit", "detkit.*"]),
    package_data={"detkit": ["config/*.yml", "data/raccoon/*", "data/raccoon/images/*",
                             "server/page/*"]},
    include_package_data=True,
    install_requires=[
        "tensorflow>=2.16",
        "keras>=3.0",
        "tensorboard>=2.16",
        "numpy",
        "click>=8.0",
        "pyyaml",
        "pillow",
        "tqdm",
        "pycocotools>=2.0.7",
        "matplotlib",
        "imageio[ffmpeg]>=2.28",
        "imagehash>=4.3",  # perceptual hashes: `dataset check` finds near-identical photos
    ],
    extras_require={
        # `detkit server web`: FastAPI on uvicorn, python-multipart for uploads.
        "web": WEB,
        # `detkit checkpoint export --format openvino` and running what it writes; NNCF quantises it (--int8).
        "openvino": OPENVINO,
        # The web deps too, so the server tests run; httpx2 is the test client's transport (httpx for older
        # Starlette), Playwright drives the system's Chromium in the browser test (no browser download).
        # import-linter checks that the packages import each other in layers (.importlinter); openvino and nncf
        # run the export tests.
        "test": ["pytest>=7", "pytest-timeout", *WEB, "httpx", "httpx2", "playwright>=1.40", "import-linter>=2.0",
                 *OPENVINO],
    },
    entry_points={"console_scripts": ["detkit=detkit.cli.main:main"]},
)
