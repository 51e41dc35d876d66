"""Start the closed loop: ``ros2 launch showme_ros closed_loop.launch.py [name:=value]``.

Three lifecycle nodes, each in its own process and namespace:

- ``/robot/sim_robot`` (``sim_robot_node``, ``config/sim_robot.yaml``): the simulated Meta-World
  robot: camera on ``/robot/camera/image_raw``, ``/robot/execute_skill``, ``/robot/reset_scene``;
- ``/showme/predictor`` (``showme_node``, ``config/showme.yaml``): the world model, its camera
  input remapped to the robot's camera, with room for K samples of every candidate in one call;
- ``/planner/planner`` (``planner_node``, ``config/planner.yaml``): ``/planner/plan_and_execute``.
"""

from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription

CONFIG = [FindPackageShare("showme_ros"), "config"]
ARGUMENTS = {
    "model_path": ("", "World-model folder; empty = the shipped default model."),
    "device": ("auto", "Torch device of the world model: auto, cpu, cuda or cuda:N."),
    "scene": ("drawer", "Scene the robot starts in."),
    "layout_seed": ("2040", "Layout seed the robot starts in."),
    "realtime_factor": ("1.0", "Simulated seconds per second while a skill runs; 0 = at once."),
    "camera_rate": ("30.0", "Frames per second of the robot's camera."),
    "samples": ("4", "Samples per candidate (K) of the planner."),
    "metric": ("psnr", "Metric that decides: psnr or edges."),
    "max_candidates": ("32", "Instructions beyond the first that one world-model call may hold."),
    "num_steps": ("0", "World-model denoising steps; 0 = the model folder's stored setting."),
    "guidance_scale": ("0", "World-model guidance scale; 0 = the model folder's stored setting."),
}


def generate_launch_description() -> LaunchDescription:
    """Declare the arguments and the three nodes."""
    arguments = [
        DeclareLaunchArgument(name, default_value=default, description=description)
        for name, (default, description) in ARGUMENTS.items()
    ]
    robot = LifecycleNode(
        package="showme_ros",
        executable="sim_robot_node",
        name="sim_robot",
        namespace="robot",
        output="screen",
        parameters=[
            PathJoinSubstitution([*CONFIG, "sim_robot.yaml"]),
            {
                "scene.name": LaunchConfiguration("scene"),
                "scene.layout_seed": ParameterValue(
                    LaunchConfiguration("layout_seed"), value_type=int
                ),
                "robot.realtime_factor": ParameterValue(
                    LaunchConfiguration("realtime_factor"), value_type=float
                ),
                "camera.rate": ParameterValue(LaunchConfiguration("camera_rate"), value_type=float),
            },
        ],
    )
    world_model = LifecycleNode(
        package="showme_ros",
        executable="showme_node",
        name="predictor",
        namespace="showme",
        output="screen",
        parameters=[
            PathJoinSubstitution([*CONFIG, "showme.yaml"]),
            {
                "model.path": ParameterValue(LaunchConfiguration("model_path"), value_type=str),
                "device": LaunchConfiguration("device"),
                "limits.max_candidates": ParameterValue(
                    LaunchConfiguration("max_candidates"), value_type=int
                ),
                "inference.num_steps": ParameterValue(
                    LaunchConfiguration("num_steps"), value_type=int
                ),
                "inference.guidance_scale": ParameterValue(
                    LaunchConfiguration("guidance_scale"), value_type=float
                ),
            },
        ],
        remappings=[("image", "/robot/camera/image_raw")],
    )
    planner = LifecycleNode(
        package="showme_ros",
        executable="planner_node",
        name="planner",
        namespace="planner",
        output="screen",
        parameters=[
            PathJoinSubstitution([*CONFIG, "planner.yaml"]),
            {
                "planning.samples": ParameterValue(LaunchConfiguration("samples"), value_type=int),
                "planning.metric": LaunchConfiguration("metric"),
            },
        ],
    )
    return LaunchDescription([*arguments, robot, world_model, planner])
