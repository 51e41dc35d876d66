# The few commands people run. `make setup` is called by the others and is a no-op when
# nothing it depends on changed.
VENV := .venv
PY := $(VENV)/bin/python
ENV_STAMP := $(VENV)/.env-stamp
BUILD_STAMP := $(VENV)/.ros-build-stamp
COLCON_STAMP := $(VENV)/.colcon-stamp
ROS_SOURCES := CMakeLists.txt package.xml $(wildcard msg/*.msg srv/*.srv action/*.action) \
	$(shell find showme_ros launch config scripts -type f -not -path '*/__pycache__/*' 2>/dev/null)

.PHONY: setup colcon test lint format demo bench clean

setup: $(BUILD_STAMP) $(COLCON_STAMP)

$(ENV_STAMP): requirements/constraints.txt requirements/ros.txt setup.py pyproject.toml package.xml \
		scripts/setup_env.sh
	bash scripts/setup_env.sh
	touch $@

$(BUILD_STAMP): $(ENV_STAMP) $(ROS_SOURCES)
	bash scripts/build_ros_package.sh
	touch $@

# colcon and the wheels' CMake fixes, so `colcon build` works in this venv (scripts/prepare_colcon_venv.sh)
colcon: $(COLCON_STAMP)

$(COLCON_STAMP): $(ENV_STAMP) requirements/colcon.txt scripts/prepare_colcon_venv.sh \
		scripts/patch_ros_wheel_cmake.py
	bash scripts/prepare_colcon_venv.sh $(VENV)
	touch $@

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: lint
	$(PY) -m pytest

demo: setup
	$(PY) -m showme_ros.demo

bench: setup
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) build demo_out
