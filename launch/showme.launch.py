"""Start the showme world-model node: ``ros2 launch showme_ros showme.launch.py [name:=value]``.

The node ``predictor`` runs in namespace ``showme`` (so its service is ``/showme/predict``),
reads ``config/showme.yaml``, and subscribes to the camera and instruction topics given here.
"""

from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription

ARGUMENTS = {
    "namespace": ("showme", "Namespace of the node and its topics, services and action."),
    "params_file": (
        PathJoinSubstitution([FindPackageShare("showme_ros"), "config", "showme.yaml"]),
        "Parameter file; the arguments below override it.",
    ),
    "model_path": ("", "Model folder; empty = the shipped default model."),
    "device": ("auto", "Torch device: auto, cpu, cuda or cuda:N."),
    "dtype": ("auto", "Weight dtype: auto, float32, float16 or bfloat16."),
    "mode": ("image", "Continuous-mode prediction: image (goal image) or video (rollout)."),
    "continuous": ("false", "Predict on every new instruction and publish the result."),
    "image_topic": ("image", "Camera topic (sensor_msgs/Image) to remap the input to."),
    "compressed_image_topic": (
        "image/compressed",
        "Compressed camera topic (sensor_msgs/CompressedImage) to remap the input to.",
    ),
    "instruction_topic": ("instruction", "Instruction topic (std_msgs/String)."),
}


def generate_launch_description() -> LaunchDescription:
    """Declare the arguments and the lifecycle node that uses them."""
    arguments = [
        DeclareLaunchArgument(name, default_value=default, description=description)
        for name, (default, description) in ARGUMENTS.items()
    ]
    node = LifecycleNode(
        package="showme_ros",
        executable="showme_node",
        name="predictor",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        parameters=[
            LaunchConfiguration("params_file"),
            {
                "model.path": ParameterValue(LaunchConfiguration("model_path"), value_type=str),
                "device": LaunchConfiguration("device"),
                "dtype": LaunchConfiguration("dtype"),
                "continuous.mode": LaunchConfiguration("mode"),
                "continuous.enabled": ParameterValue(
                    LaunchConfiguration("continuous"), value_type=bool
                ),
            },
        ],
        remappings=[
            ("image", LaunchConfiguration("image_topic")),
            ("image/compressed", LaunchConfiguration("compressed_image_topic")),
            ("instruction", LaunchConfiguration("instruction_topic")),
        ],
    )
    return LaunchDescription([*arguments, node])
