from django.apps import AppConfig
from django.core import checks
from django.utils.translation import gettext_lazy as _


class CommunitiesConfig(AppConfig):
    name = "communities"
    verbose_name = _("Communities")

    def ready(self) -> None:
        checks.register(check_print_font, checks.Tags.compatibility)


def check_print_font(app_configs: object, **kwargs: object) -> list[checks.CheckMessage]:
    """A missing Japanese font must stop start-up, not print PDFs of empty boxes."""
    from communities.pdf import print_font_status

    if print_font_status() != "ok":
        return [
            checks.Error(
                "The Japanese print font (BIZ UDGothic) is not installed.",
                hint="apt-get install fonts-morisawa-bizud-gothic libharfbuzz-subset0",
                id="kairan.E001",
            )
        ]
    return []
