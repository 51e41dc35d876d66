"""ROS 2 interface of the showme world model.

When built, this package's folder also holds the generated interface modules `msg`, `srv` and
`action`. Run from a source tree, the generated modules live in the installed copy of the
package instead; extending ``__path__`` over every ``showme_ros`` folder on ``sys.path`` lets
``showme_ros.msg`` and the hand-written modules import together either way.
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
