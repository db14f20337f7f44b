set terminal pngcairo size 1400,900 noenhanced
set output 'scale.png'
set multiplot layout 2,2 title 'Live HyParView + Plumtree overlay (make bench-scale; N=1000 in two processes)'
set grid; set key top left box opaque; set datafile missing 'NaN'; set xtics font ',10'
set style data histograms; set style histogram clustered gap 1; set style fill solid 0.7 border -1
set title 'join: seconds until'; set ylabel 's'; set yrange [0:*]
plot 'scale-runs.dat' using 4:xtic(2) title 'every member has a neighbour', '' using 5 title 'one connected, symmetric graph'
set title 'per joined member'; set ylabel 'resident KiB'; set y2label 'descriptors'; set y2tics; set y2range [0:40]
plot 'scale-runs.dat' using 6:xtic(2) title 'resident KiB', '' using 7 axes x1y2 title 'descriptors (right axis)'
unset y2tics; unset y2label; set key top right
set style data linespoints; unset xtics; set xtics 1; set xlabel 'broadcast (1-5 steady, 6-7 right after 20 % stopped, 8-12 after repair)'
set title 'relative message redundancy'; set ylabel 'RMR'; set yrange [0:*]
plot 'scale-100-broadcasts.dat' using 1:3 title 'N=100', 'scale-300-broadcasts.dat' using 1:3 title 'N=300', 'scale-300-all-at-once-broadcasts.dat' using 1:3 title 'N=300 at once', 'scale-1000-broadcasts.dat' using 1:3 title 'N=1000'
set title 'last delivery'; set ylabel 'ms'; set logscale y; set yrange [1:20000]; set key bottom right
plot 'scale-100-broadcasts.dat' using 1:2 title 'N=100', 'scale-300-broadcasts.dat' using 1:2 title 'N=300', 'scale-300-all-at-once-broadcasts.dat' using 1:2 title 'N=300 at once', 'scale-1000-broadcasts.dat' using 1:2 title 'N=1000'
unset multiplot
