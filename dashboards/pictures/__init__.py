"""Pictures of the dashboards as Grafana would draw them, from a real Prometheus' answers.

No Grafana server runs here (its licence and the registries we reach keep it out), so
``make dashboards-render`` draws dashboards/*.json itself: ``grafana.py`` holds Grafana's rules
(time intervals, template variables, legends, units, threshold colours), ``draw.py`` lays the
panels out on Grafana's grid and sends each panel's own queries to Prometheus' ``query_range``
as Grafana would, ``panels.py`` draws each panel type with matplotlib. Not part of the image.
"""
