import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

application = get_wsgi_application()

from communities.pdf import print_warm_in_background  # noqa: E402

# The page servers print; the first PDF of each worker should not cost seconds.
print_warm_in_background()
